//! `cargo bench --bench throughput`: durable append throughput in one run, as ratios.
//!
//! C  in-process ceiling: the ledger's writer (parallel strict verify of 2 signatures/event,
//!    hash, policy, one sled transaction + fsync per group) fed directly, no gRPC.
//! G  the same events over gRPC on 127.0.0.1, unary (one call per event, many clients) and
//!    streaming (AppendStream), with p50/p99 latency; ratio G/C.
//! B  the baseline a user would pick instead: PostgreSQL with a hash-chain column,
//!    synchronous_commit=on, the same Rust signature checks; one transaction per event and
//!    batched. Needs CELLTRAIL_BENCH_PG (a libpq connection string); `benches/run.sh` installs
//!    and starts a throw-away PostgreSQL and sets it. Without it B is skipped and says so.
//! V  offline verification rate vs the raw ed25519 strict verify rate of this machine.
//! P  C and G again with the ledger in PostgreSQL (`serve --store`), each on a fresh database
//!    of CELLTRAIL_BENCH_PG, as ratios to sled's C and G of the same run.
//!
//! Sizes: CELLTRAIL_BENCH_CHAINS (default 64) x CELLTRAIL_BENCH_EVENTS (per chain, default 300).
//! CELLTRAIL_BENCH_MILLION=1 adds the 1 M-entry run (disk, RSS, restart) against the release
//! binary; CELLTRAIL_BENCH_ONLY=M runs only that (build the binary first: `cargo build --release`),
//! CELLTRAIL_BENCH_ONLY=C only the in-process ceiling, CELLTRAIL_BENCH_ONLY=P only C and G on
//! sled and then on PostgreSQL (no V, M or B).

#[path = "support/measure.rs"]
mod measure;

use celltrail::client::{sign_draft, Draft};
use celltrail::crypto::EventHash;
use celltrail::ledger::{Ledger, LedgerOptions};
use celltrail::note::NoteSigner;
use celltrail::pb::{
    event_body::Detail, Collected, Enrolled, KeyRegistered, SignatureMeaning, SignedEvent,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEC: i64 = 1_000_000_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The default custody table with a second (VERIFIED) nurse signature on enrolment and
/// collection, so every benchmark event carries two signatures.
fn two_signature_policy() -> String {
    let table = include_str!("../src/policy/default.toml");
    let one = r#"signatures = [{ role = "apheresis_nurse", meaning = "PERFORMED" }]"#;
    let two = r#"signatures = [{ role = "apheresis_nurse", meaning = "PERFORMED" }, { role = "apheresis_nurse", meaning = "VERIFIED" }]"#;
    let enrol_one =
        r#"signatures = [{ role = ["apheresis_nurse", "nurse"], meaning = "PERFORMED" }]"#;
    let (head, tail) = table
        .split_once(r#"event = "collected""#)
        .expect("collected transition");
    let tail = tail.replacen(one, two, 1);
    let head = head.replacen(enrol_one, two, 1);
    assert!(
        tail.contains(two) && head.contains(two),
        "policy table changed shape"
    );
    format!("{head}event = \"collected\"{tail}")
}

struct Keys {
    admin: NoteSigner,
    nurse: NoteSigner,
    witness: NoteSigner,
}

fn registrations(k: &Keys, t0: i64) -> Vec<SignedEvent> {
    // First the bench's table, recorded as the log's table in force (`serve --policy` would
    // refuse to put an unrecorded table in force, and these servers trust an outside admin).
    let (_, activation) =
        celltrail::policy::PolicyBook::activation_of(two_signature_policy().as_bytes())
            .expect("the bench table loads");
    let draft = Draft {
        chain_id: "keys".into(),
        seq: 0,
        prev_hash: vec![0u8; 32],
        occurred_at: t0,
        site: String::new(),
        comment: String::new(),
        detail: Detail::PolicyActivated(activation),
    };
    let ev = sign_draft(draft, &[(&k.admin, SignatureMeaning::Performed)], t0);
    let mut prev = EventHash::of_body(&ev.body).0.to_vec();
    let mut out = vec![ev];
    for (i, who) in [&k.nurse, &k.witness].into_iter().enumerate() {
        let draft = Draft {
            chain_id: "keys".into(),
            seq: i as u64 + 1,
            prev_hash: prev.clone(),
            occurred_at: t0,
            site: String::new(),
            comment: String::new(),
            detail: Detail::KeyRegistered(KeyRegistered {
                key_id: who.name.clone(),
                public_key: who.key.verifying_key().as_bytes().to_vec(),
                printed_name: who.name.clone(),
                role: "apheresis_nurse".into(),
                site: "HOSP-A".into(),
                valid_from_unix_nanos: t0 - 3600 * SEC,
                valid_until_unix_nanos: 0,
            }),
        };
        let ev = sign_draft(draft, &[(&k.admin, SignatureMeaning::Performed)], t0);
        prev = EventHash::of_body(&ev.body).0.to_vec();
        out.push(ev);
    }
    out
}

/// A DIN no other chain of the run names: facility from the prefix's letter and number
/// ("BAG" -> B0000, "M0012" -> M0012), serial = the chain's number.
fn din_of(prefix: &str, chain: usize) -> String {
    let letter = prefix.chars().next().unwrap_or('A').to_ascii_uppercase();
    let number: u32 = prefix
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    format!("{letter}{:04}26{:06}", number % 10_000, chain % 1_000_000)
}

/// `chains` chains of `per_chain` events each (enrolment, then collections), two signatures each.
fn workload(
    k: &Keys,
    prefix: &str,
    chains: usize,
    per_chain: usize,
    t0: i64,
) -> Vec<Vec<SignedEvent>> {
    let signers = [
        (&k.nurse, SignatureMeaning::Performed),
        (&k.witness, SignatureMeaning::Verified),
    ];
    (0..chains)
        .map(|c| {
            let chain_id = format!("{prefix}-{c:05}");
            let mut prev = vec![0u8; 32];
            (0..per_chain)
                .map(|seq| {
                    let at = t0 + seq as i64 * SEC;
                    let detail = if seq == 0 {
                        Detail::Enrolled(Enrolled {
                            coi_ref: format!("COI-{c:05}"),
                            therapy: "CAR-T".into(),
                            manufacturing_site: "MFG-1".into(),
                        })
                    } else {
                        Detail::Collected(Collected {
                            // One bag, one chain: each chain collects its own DIN.
                            din: din_of(prefix, c),
                            product_code: "S1234000".into(),
                            volume_ml: Some(250),
                            collection_end_unix_nanos: Some(at),
                        })
                    };
                    let draft = Draft {
                        chain_id: chain_id.clone(),
                        seq: seq as u64,
                        prev_hash: prev.clone(),
                        occurred_at: at,
                        site: "HOSP-A".into(),
                        comment: String::new(),
                        detail,
                    };
                    let ev = sign_draft(draft, &signers, at);
                    prev = EventHash::of_body(&ev.body).0.to_vec();
                    ev
                })
                .collect()
        })
        .collect()
}

fn count(w: &[Vec<SignedEvent>]) -> usize {
    w.iter().map(Vec::len).sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Env {
    _dir: tempfile::TempDir,
    ledger: Arc<Ledger>,
    /// What the server reports about the opened directory.
    info: celltrail::backup::ServerInfo,
}

/// Passphrase of the bench servers' log keys.
const BENCH_PASSPHRASE: &str = "benchmark log key passphrase";

fn open_ledger(admin: &NoteSigner) -> Env {
    open_ledger_on(admin, None)
}

/// [`open_ledger`] on the sled store (`None`) or a PostgreSQL database (its URL).
fn open_ledger_on(admin: &NoteSigner, pg_url: Option<String>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("anchors.txt");
    std::fs::write(&anchors, format!("{}\n", admin.verifier().to_key_string())).unwrap();
    let mut opts = celltrail::server::ServeOptions::new(dir.path().join("data"));
    opts.trust_anchors = Some(anchors);
    opts.ledger = LedgerOptions::default();
    if let Some(url) = pg_url {
        opts.storage = Some(Arc::new(
            celltrail::pg::PgStore::open(&url, None, &Default::default())
                .expect("open the PostgreSQL store"),
        ));
    }
    // The log key is encrypted as in production (one PBKDF2 at open, outside every timing).
    opts.key_passphrase = Some(celltrail::keys::Passphrase::new(BENCH_PASSPHRASE));
    let opened = celltrail::server::open(&opts).expect("open ledger");
    Env {
        _dir: dir,
        info: celltrail::server::server_info(&opened),
        ledger: opened.ledger,
    }
}

/// The writer fed directly and kept busy: every event submitted in order (chains interleaved,
/// each chain's events in seq order) without waiting for receipts, then all receipts awaited.
async fn in_process(env: &Env, regs: &[SignedEvent], work: Vec<Vec<SignedEvent>>) -> f64 {
    for r in regs {
        env.ledger.append_wait(r.clone()).await.expect("register");
    }
    let n = count(&work);
    let events = interleave(work);
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for ev in events {
        pending.push_back(env.ledger.submit(ev).await);
        // Keep memory bounded like a stream window would.
        if pending.len() >= 8192 {
            pending
                .pop_front()
                .unwrap()
                .await
                .expect("in-process append");
        }
    }
    for p in pending {
        p.await.expect("in-process append");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Chains round-robin, each chain's events kept in order.
fn interleave(work: Vec<Vec<SignedEvent>>) -> Vec<SignedEvent> {
    let mut chains: Vec<std::vec::IntoIter<SignedEvent>> =
        work.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    let mut live = true;
    while live {
        live = false;
        for chain in chains.iter_mut() {
            if let Some(ev) = chain.next() {
                out.push(ev);
                live = true;
            }
        }
    }
    out
}

async fn serve(env: &Env) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let opts = celltrail::server::RunOptions {
        info: env.info.clone(),
        tls: None,
        witnesses: Vec::new(),
        net: celltrail::server::NetOptions::default(),
    };
    tokio::spawn(celltrail::server::run(
        listener,
        env.ledger.clone(),
        opts,
        std::future::pending(),
    ));
    addr
}

async fn grpc_unary(
    addr: &str,
    regs: &[SignedEvent],
    work: Vec<Vec<SignedEvent>>,
) -> (f64, Duration, Duration) {
    let mut c = celltrail::client::connect(addr).await.unwrap();
    for r in regs {
        c.append(r.clone()).await.expect("register");
    }
    let n = count(&work);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for chain in work {
        let mut c = celltrail::client::connect(addr).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(chain.len());
            for ev in chain {
                let t = Instant::now();
                c.append(ev).await.expect("unary append");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    (rate, percentile(&lat, 0.5), percentile(&lat, 0.99))
}

async fn grpc_stream(
    addr: &str,
    regs: &[SignedEvent],
    work: Vec<Vec<SignedEvent>>,
    streams: usize,
) -> f64 {
    let mut c = celltrail::client::connect(addr).await.unwrap();
    for r in regs {
        c.append(r.clone()).await.expect("register");
    }
    let n = count(&work);
    // Interleave chains round-robin within each stream (per-chain order is kept).
    let mut per_stream: Vec<Vec<SignedEvent>> = vec![Vec::new(); streams];
    let mut chains: Vec<std::vec::IntoIter<SignedEvent>> =
        work.into_iter().map(Vec::into_iter).collect();
    let mut live = true;
    while live {
        live = false;
        for (i, chain) in chains.iter_mut().enumerate() {
            if let Some(ev) = chain.next() {
                per_stream[i % streams].push(ev);
                live = true;
            }
        }
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for events in per_stream {
        let mut c = celltrail::client::connect(addr).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let expected = events.len();
            let mut rx = c
                .append_stream(tokio_stream::iter(events))
                .await
                .unwrap()
                .into_inner();
            let mut got = 0;
            while let Some(r) = rx.message().await.unwrap() {
                assert_eq!(r.code, 0, "stream append rejected: {}", r.message);
                got += 1;
            }
            assert_eq!(got, expected);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// `verify --data-dir` over the in-process run's store: events/s of the full offline audit
/// (signatures, registry, links, policy replay, Merkle root).
fn offline_verify_rate(env: Env, keys: &Keys) -> f64 {
    env.ledger.shutdown();
    let Env {
        _dir: dir, ledger, ..
    } = env;
    drop(ledger);
    use celltrail::storage::Storage as _;
    let store = celltrail::store::Store::open_for_audit(&dir.path().join("data").join("db"))
        .expect("reopen store");
    let log_key = celltrail::keys::read_key_file_with(
        &dir.path().join("data").join("log.key"),
        &celltrail::keys::PassphraseSource::Given(celltrail::keys::Passphrase::new(
            BENCH_PASSPHRASE,
        )),
    )
    .unwrap()
    .verifier();
    let data_keys = celltrail::bundle::audit::DataDirKeys {
        log_key,
        log_key_source: "bench".into(),
        admins: vec![keys.admin.verifier()],
    };
    // No override: every entry replays under the table the log recorded (the bench's).
    let policy = celltrail::policy::Policy::default_autologous_car_t();
    let n = store.tree_size().unwrap();
    let start = Instant::now();
    let report = celltrail::bundle::audit::verify_store(&store, &data_keys, &policy, None);
    let secs = start.elapsed().as_secs_f64();
    assert!(
        report.ok,
        "offline audit of the bench store failed: {:?}",
        report.failure
    );
    n as f64 / secs
}

/// Strict ed25519 verifications per second on one core, over the benchmark's own signatures.
fn raw_verify_rate(work: &[Vec<SignedEvent>], keys: &Keys) -> f64 {
    let by_name: std::collections::HashMap<String, ed25519_dalek::VerifyingKey> =
        [&keys.nurse, &keys.witness]
            .iter()
            .map(|k| (k.name.clone(), k.key.verifying_key()))
            .collect();
    let mut items = Vec::new();
    for ev in work.iter().flatten().take(5000) {
        let hash = EventHash::of_body(&ev.body);
        for s in &ev.signatures {
            let msg = celltrail::crypto::signature_message(
                &hash,
                s.meaning,
                s.signed_at_unix_nanos,
                &s.key_id,
            )
            .unwrap();
            let sig: [u8; 64] = s.signature.as_slice().try_into().unwrap();
            items.push((by_name[&s.key_id], msg, sig));
        }
    }
    let start = Instant::now();
    for (k, m, s) in &items {
        celltrail::crypto::verify_strict_raw(k, m, s).expect("benchmark signature verifies");
    }
    items.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if let Ok(filter) = std::env::var("CELLTRAIL_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let chains = env_usize("CELLTRAIL_BENCH_CHAINS", 64);
    let per_chain = env_usize("CELLTRAIL_BENCH_EVENTS", 300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("celltrail throughput bench: {chains} chains x {per_chain} events, 2 signatures/event, {cores} cores");

    let keys = Keys {
        admin: NoteSigner::generate("bench-admin").unwrap(),
        nurse: NoteSigner::generate("nurse.bench").unwrap(),
        witness: NoteSigner::generate("nurse.witness").unwrap(),
    };
    let t0 = (celltrail::time::now_nanos() - 2 * 86_400 * SEC) / SEC * SEC;
    let regs = registrations(&keys, t0);
    if std::env::var("CELLTRAIL_BENCH_ONLY").is_ok_and(|v| v == "M") {
        // Only the 1 M-entry run (disk, RSS, restart): storage work needs nothing else.
        rt.block_on(million::run(&keys, &regs, t0));
        return;
    }
    let sign_start = Instant::now();
    let work = workload(&keys, "BAG", chains, per_chain, t0);
    let n = count(&work);
    println!(
        "signed {n} events client-side in {:.2?} (not measured below)",
        sign_start.elapsed()
    );

    let only = std::env::var("CELLTRAIL_BENCH_ONLY").unwrap_or_default();
    let c_env = open_ledger(&keys.admin);
    let c_rate = rt.block_on(in_process(&c_env, &regs, work.clone()));
    println!("C  in-process ceiling:            {c_rate:>10.0} events/s");
    if only == "C" {
        return;
    }

    let u_env = open_ledger(&keys.admin);
    let (u_rate, p50, p99) = rt.block_on(async {
        let addr = serve(&u_env).await;
        grpc_unary(&addr, &regs, work.clone()).await
    });
    println!("G  gRPC unary, {chains} clients:      {u_rate:>10.0} events/s  p50 {p50:.2?}  p99 {p99:.2?}  G/C {:.2}", u_rate / c_rate);

    let s_env = open_ledger(&keys.admin);
    let streams = env_usize("CELLTRAIL_BENCH_STREAMS", 4);
    let s_rate = rt.block_on(async {
        let addr = serve(&s_env).await;
        grpc_stream(&addr, &regs, work.clone(), streams).await
    });
    println!(
        "G  gRPC AppendStream, {streams} streams: {s_rate:>10.0} events/s  G/C {:.2}",
        s_rate / c_rate
    );
    if only == "P" {
        match std::env::var("CELLTRAIL_BENCH_PG") {
            Ok(conn) => pgstore::run(
                &rt,
                &conn,
                &keys,
                &regs,
                &work,
                streams,
                (c_rate, u_rate, s_rate),
            ),
            Err(_) => println!("P  PostgreSQL store: SKIPPED (CELLTRAIL_BENCH_PG not set)"),
        }
        return;
    }
    let raw = raw_verify_rate(&work, &keys);
    let v_rate = offline_verify_rate(c_env, &keys);
    println!("V  verify --data-dir (offline audit): {v_rate:>10.0} events/s  vs raw verify {:.0} events/s on 1 core: V/raw {:.2}", raw / 2.0, v_rate / (raw / 2.0));
    println!("   raw strict ed25519 verify, 1 core: {raw:>10.0} signatures/s  (= {:.0} events/s at 2 signatures; x{cores} cores = {:.0})", raw / 2.0, raw / 2.0 * cores as f64);
    println!(
        "   C / (raw verify bound on {cores} cores): {:.2}",
        c_rate / (raw / 2.0 * cores as f64)
    );

    if std::env::var("CELLTRAIL_BENCH_MILLION").is_ok_and(|v| v == "1") {
        rt.block_on(million::run(&keys, &regs, t0));
    } else {
        println!("   1 M-entry run (disk, RSS, restart): not run; set CELLTRAIL_BENCH_MILLION=1");
    }

    if let Ok(conn) = std::env::var("CELLTRAIL_BENCH_PG") {
        pgstore::run(
            &rt,
            &conn,
            &keys,
            &regs,
            &work,
            streams,
            (c_rate, u_rate, s_rate),
        );
    } else {
        println!("P  PostgreSQL store: SKIPPED (CELLTRAIL_BENCH_PG not set; run benches/run.sh)");
    }
    match std::env::var("CELLTRAIL_BENCH_PG") {
        Ok(conn) => rt.block_on(baseline::run(&conn, &keys, work.clone(), chains, u_rate.max(s_rate))),
        Err(_) => println!("B  PostgreSQL baseline: SKIPPED (CELLTRAIL_BENCH_PG not set; run benches/run.sh to install and start one)"),
    }
}

/// B: PostgreSQL with a hash-chain column, synchronous_commit=on, signatures checked by the same
/// Rust code; one transaction per event, then batches of 100 events per transaction.
mod baseline {
    use super::*;
    use tokio_postgres::NoTls;

    const BATCH: usize = 100;

    fn verify(
        ev: &SignedEvent,
        keys: &std::collections::HashMap<String, ed25519_dalek::VerifyingKey>,
    ) -> EventHash {
        let hash = EventHash::of_body(&ev.body);
        for s in &ev.signatures {
            celltrail::crypto::verify_signature(&keys[&s.key_id], &hash, s)
                .expect("baseline signature verifies");
        }
        hash
    }

    async fn append(
        tx: &tokio_postgres::Transaction<'_>,
        chain: &str,
        seq: i64,
        prev: &[u8],
        hash: &[u8],
        entry: &[u8],
    ) {
        if seq > 0 {
            let row = tx
                .query_one(
                    "SELECT hash FROM events WHERE chain_id = $1 AND seq = $2",
                    &[&chain, &(seq - 1)],
                )
                .await
                .expect("previous event");
            let head: Vec<u8> = row.get(0);
            assert_eq!(head, prev, "baseline hash chain broken");
        }
        tx.execute(
            "INSERT INTO events (chain_id, seq, prev_hash, hash, entry) VALUES ($1, $2, $3, $4, $5)",
            &[&chain, &seq, &prev, &hash, &entry],
        )
        .await
        .expect("insert");
    }

    async fn run_mode(conn: &str, keys: &Keys, work: Vec<Vec<SignedEvent>>, batch: usize) -> f64 {
        let (client, connection) = tokio_postgres::connect(conn, NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(connection);
        client
            .batch_execute(
                "SET synchronous_commit = on;
                 DROP TABLE IF EXISTS events;
                 CREATE TABLE events (chain_id text NOT NULL, seq bigint NOT NULL, prev_hash bytea NOT NULL,
                   hash bytea NOT NULL UNIQUE, entry bytea NOT NULL, PRIMARY KEY (chain_id, seq));",
            )
            .await
            .expect("create table");
        let vk: std::collections::HashMap<String, ed25519_dalek::VerifyingKey> =
            [&keys.nurse, &keys.witness]
                .iter()
                .map(|k| (k.name.clone(), k.key.verifying_key()))
                .collect();
        let vk = Arc::new(vk);
        let n = count(&work);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for chain in work {
            let conn = conn.to_string();
            let vk = vk.clone();
            tasks.push(tokio::spawn(async move {
                let (mut client, connection) = tokio_postgres::connect(&conn, NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(connection);
                client
                    .batch_execute("SET synchronous_commit = on")
                    .await
                    .unwrap();
                for group in chain.chunks(batch) {
                    let tx = client.transaction().await.unwrap();
                    for ev in group {
                        let hash = verify(ev, &vk);
                        let body = <celltrail::pb::EventBody as prost::Message>::decode(
                            ev.body.as_slice(),
                        )
                        .unwrap();
                        let entry = prost::Message::encode_to_vec(ev);
                        append(
                            &tx,
                            &body.chain_id,
                            body.seq as i64,
                            &body.prev_hash,
                            &hash.0,
                            &entry,
                        )
                        .await;
                    }
                    tx.commit().await.expect("commit");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        n as f64 / start.elapsed().as_secs_f64()
    }

    pub async fn run(
        conn: &str,
        keys: &Keys,
        work: Vec<Vec<SignedEvent>>,
        chains: usize,
        best_g: f64,
    ) {
        let one = run_mode(conn, keys, work.clone(), 1).await;
        println!(
            "B  PostgreSQL, 1 tx/event, {chains} clients: {one:>8.0} events/s  G/B {:.2}",
            best_g / one
        );
        let batched = run_mode(conn, keys, work, BATCH).await;
        println!("B  PostgreSQL, {BATCH} events/tx, {chains} clients: {batched:>6.0} events/s  G/B {:.2}", best_g / batched);
    }
}

/// 1 M entries against the release binary in its own process: disk bytes vs raw entry bytes,
/// server RSS, and restart-to-serving time after `kill -9`.
mod million {
    use super::measure::{du, rss_kib};
    use super::*;
    use std::process::{Child, Command, Stdio};

    const ENTRIES: usize = 1_000_000;
    const CHAINS: usize = 1000;
    const STREAMS: usize = 4;

    fn binary() -> std::path::PathBuf {
        let exe = std::env::current_exe().unwrap();
        // target/release/deps/throughput-xxxx -> target/release/celltrail
        exe.parent().unwrap().parent().unwrap().join("celltrail")
    }

    fn start(data: &std::path::Path, anchors: &std::path::Path, port: u16) -> Child {
        // An encrypted log key, as in production: restart time includes opening it.
        let pass = data.with_extension("passphrase");
        std::fs::write(&pass, format!("{BENCH_PASSPHRASE}\n")).unwrap();
        // 0600, as SECURITY.md asks of an operator (serve warns about anything wider).
        std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        Command::new(binary())
            .args(["serve", "--data-dir"])
            .arg(data)
            .arg("--key-passphrase-file")
            .arg(&pass)
            .arg("--trust-anchors")
            .arg(anchors)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CELLTRAIL_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start celltrail serve (build it: cargo build --release)")
    }

    async fn wait_serving(addr: &str) -> Duration {
        let t = Instant::now();
        loop {
            if let Ok(mut c) = celltrail::client::connect(addr).await {
                if c.get_entries(celltrail::pb::GetEntriesRequest { start: 0, limit: 1 })
                    .await
                    .is_ok()
                {
                    return t.elapsed();
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn run(keys: &Keys, regs: &[SignedEvent], t0: i64) {
        let dir = tempfile::tempdir().unwrap();
        let anchors = dir.path().join("anchors.txt");
        std::fs::write(
            &anchors,
            format!("{}\n", keys.admin.verifier().to_key_string()),
        )
        .unwrap();
        let data = dir.path().join("data");
        let port = 20000 + (std::process::id() % 20000) as u16;
        let addr = format!("127.0.0.1:{port}");
        let mut child = start(&data, &anchors, port);
        wait_serving(&addr).await;
        let mut c = celltrail::client::connect(&addr).await.unwrap();
        for r in regs {
            c.append(r.clone()).await.unwrap();
        }
        let per_chain = ENTRIES / CHAINS;
        let load = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..STREAMS {
            let (tx, rx) = tokio::sync::mpsc::channel::<SignedEvent>(4096);
            let k = Keys {
                admin: keys.admin.clone(),
                nurse: keys.nurse.clone(),
                witness: keys.witness.clone(),
            };
            // Sign on a blocking thread, chain by chain, while the stream sends.
            std::thread::spawn(move || {
                for chain in (s..CHAINS).step_by(STREAMS) {
                    for ev in workload(&k, &format!("M{chain:04}"), 1, per_chain, t0).remove(0) {
                        if tx.blocking_send(ev).is_err() {
                            return;
                        }
                    }
                }
            });
            let mut c = celltrail::client::connect(&addr).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut rx = c
                    .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .unwrap()
                    .into_inner();
                let mut n = 0u64;
                while let Some(r) = rx.message().await.unwrap() {
                    assert_eq!(r.code, 0, "{}", r.message);
                    n += 1;
                }
                n
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        let load_s = load.elapsed().as_secs_f64();
        let rss = rss_kib(child.id());
        // Raw entry bytes: what the log stores as entries (exact LogEntry bytes).
        let mut raw = 0u64;
        let mut start_at = 0;
        loop {
            let page = c
                .get_entries(celltrail::pb::GetEntriesRequest {
                    start: start_at,
                    limit: 1000,
                })
                .await
                .unwrap()
                .into_inner();
            raw += page
                .entries
                .iter()
                .map(|e| e.entry.len() as u64)
                .sum::<u64>();
            if page.next >= page.tree_size {
                break;
            }
            start_at = page.next;
        }
        child.kill().unwrap(); // SIGKILL: crash, then recovery
        child.wait().unwrap();
        let disk = du(&data.join("db"));
        let mut child = start(&data, &anchors, port);
        let restart = wait_serving(&addr).await;
        let rss_after = rss_kib(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        println!("M  {n} events loaded over {STREAMS} streams in {load_s:.1} s ({:.0} events/s, release binary, own process)", n as f64 / load_s);
        println!(
            "M  disk {:.1} MB vs raw entries {:.1} MB: {:.2}x",
            disk as f64 / 1e6,
            raw as f64 / 1e6,
            disk as f64 / raw as f64
        );
        println!(
            "M  server RSS after load {:.0} MB; after restart {:.0} MB",
            rss as f64 / 1024.0,
            rss_after as f64 / 1024.0
        );
        println!("M  restart after kill -9 to serving: {restart:.2?}");
    }
}

/// P: the same server on the PostgreSQL store (`serve --store postgres://…`), beside sled in
/// the same run: C (in-process) and G (unary and stream), each on a fresh database.
mod pgstore {
    use super::*;

    /// Creates (anew) database `name` on the server of `conn` and returns its connection string.
    async fn fresh_db(conn: &str, name: &str) -> String {
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
            .await
            .expect("connect to the benchmark PostgreSQL");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let rest: Vec<&str> = conn
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        format!("{} dbname={name}", rest.join(" "))
    }

    pub fn run(
        rt: &tokio::runtime::Runtime,
        conn: &str,
        keys: &Keys,
        regs: &[SignedEvent],
        work: &[Vec<SignedEvent>],
        streams: usize,
        sled: (f64, f64, f64),
    ) {
        let chains = work.len();
        let open = |name: &str| {
            let url = rt.block_on(fresh_db(conn, name));
            open_ledger_on(&keys.admin, Some(url))
        };
        let c_env = open("celltrail_bench_c");
        let c = rt.block_on(in_process(&c_env, regs, work.to_vec()));
        println!(
            "P  PostgreSQL store, C in-process:  {c:>10.0} events/s  (sled {:.0}: ratio {:.2})",
            sled.0,
            c / sled.0
        );
        let u_env = open("celltrail_bench_u");
        let (u, p50, p99) = rt.block_on(async {
            let addr = serve(&u_env).await;
            grpc_unary(&addr, regs, work.to_vec()).await
        });
        println!(
            "P  PostgreSQL store, G unary, {chains} clients: {u:>10.0} events/s  p50 {p50:.2?}  p99 {p99:.2?}  (sled {:.0}: ratio {:.2}; goal >= 5000)",
            sled.1,
            u / sled.1
        );
        let s_env = open("celltrail_bench_s");
        let s = rt.block_on(async {
            let addr = serve(&s_env).await;
            grpc_stream(&addr, regs, work.to_vec(), streams).await
        });
        println!(
            "P  PostgreSQL store, G AppendStream, {streams} streams: {s:>10.0} events/s  (sled {:.0}: ratio {:.2}; goal >= 5000)",
            sled.2,
            s / sled.2
        );
        for env in [c_env, u_env, s_env] {
            env.ledger.shutdown();
        }
    }
}
