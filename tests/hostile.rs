//! Hostile input: every decoder that sees outside bytes gets random and mutated input (no
//! panic, nothing recorded that was not validly signed), and the gRPC server survives oversized
//! messages and garbage or malformed HTTP/2 on its socket.
//!
//! Parsers covered by in-module proptests already: `note` (`open_note`, `Checkpoint::parse`,
//! key strings), `codes::classify`, ISBT 128, GS1, `merkle` proofs, the policy state machine.
//! This file adds: protobuf bodies through the ledger's append path, mutated signed
//! checkpoints, trust-anchor files, policy TOML. Audit bundles (`celltrail verify BUNDLE`) are
//! in `hostile_bundle.rs`. The cargo-fuzz targets in `fuzz/` (`decode_event`, `parse_text`,
//! `verify_bundle`) drive the same decoders for longer: `cd fuzz && cargo +nightly fuzz run
//! verify_bundle -- -max_total_time=300`.

mod common;

use celltrail::client::{sign_draft, Draft};
use celltrail::crypto::EventHash;
use celltrail::ledger::Ledger;
use celltrail::note::{open_note, sign_note, Checkpoint, NoteSigner};
use celltrail::pb::{
    event_body::Detail, Enrolled, EventBody, GetHeadRequest, KeyRegistered, LogEntry,
    SignatureMeaning, SignedEvent,
};
use celltrail::server::{open, ServeOptions};
use common::mutate::{mutate, mutation};
use common::*;
use proptest::prelude::*;
use prost::Message;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// Decoders through the ledger's append path (in-process ledger, no network: fast enough for
// hundreds of cases).

struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    ledger: Arc<Ledger>,
    /// A valid, not yet appended event and its hash.
    valid: SignedEvent,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(&ServeOptions::new(dir.path())).unwrap();
        let admin = celltrail::keys::read_key_file(&dir.path().join("admin.key")).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let nurse = NoteSigner::generate("nurse.fuzz").unwrap();
        let now = celltrail::time::now_nanos();
        let reg = sign_draft(
            Draft {
                chain_id: "keys".into(),
                seq: 0,
                prev_hash: vec![0; 32],
                occurred_at: now,
                site: String::new(),
                comment: String::new(),
                detail: Detail::KeyRegistered(KeyRegistered {
                    key_id: nurse.name.clone(),
                    public_key: nurse.key.verifying_key().as_bytes().to_vec(),
                    printed_name: "Fuzz Nurse".into(),
                    role: "apheresis_nurse".into(),
                    site: "HOSP-A".into(),
                    valid_from_unix_nanos: now - 86_400 * 1_000_000_000,
                    valid_until_unix_nanos: 0,
                }),
            },
            &[(&admin, SignatureMeaning::Performed)],
            now,
        );
        rt.block_on(opened.ledger.append(reg))
            .expect("register nurse");
        let valid = sign_draft(
            Draft {
                chain_id: "FUZZ-1".into(),
                seq: 0,
                prev_hash: vec![0; 32],
                occurred_at: now,
                site: "HOSP-A".into(),
                comment: "fuzz".into(),
                detail: Detail::Enrolled(Enrolled {
                    coi_ref: "COI-7F3A-2291".into(),
                    therapy: "CAR-T anti-CD19".into(),
                    manufacturing_site: "MFG-1".into(),
                }),
            },
            &[(&nurse, SignatureMeaning::Performed)],
            now,
        );
        Fixture {
            _dir: dir,
            rt,
            ledger: opened.ledger,
            valid,
        }
    })
}

/// Appends `ev`; an acceptance is allowed only for the valid event itself (a mutation that
/// decodes to the same message, e.g. an added unknown field outside the signed body).
fn append_hostile(ev: SignedEvent) -> Result<(), TestCaseError> {
    let f = fixture();
    let before = f.ledger.store().tree_size().unwrap();
    let result = f.rt.block_on(f.ledger.append(ev));
    let after = f.ledger.store().tree_size().unwrap();
    let valid_hash = EventHash::of_body(&f.valid.body).0.to_vec();
    match result {
        Ok(r) => {
            prop_assert_eq!(
                &r.event_hash,
                &valid_hash,
                "only the validly signed event may be accepted"
            );
            prop_assert!(
                after <= 2,
                "at most the registration and the one valid event"
            );
        }
        Err(e) => {
            prop_assert_eq!(after, before, "a rejected append changed the store: {}", e);
            let status = tonic::Status::from(e);
            prop_assert!(
                !matches!(
                    status.code(),
                    Code::Unavailable | Code::Internal | Code::Unknown
                ),
                "hostile input must be refused as the client's fault, not {:?}: {}",
                status.code(),
                status.message()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_as_event_body_are_refused(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let sigs = fixture().valid.signatures.clone();
        append_hostile(SignedEvent { body, signatures: sigs })?;
    }

    #[test]
    fn mutated_event_bodies_are_refused(muts in proptest::collection::vec(mutation(), 1..4)) {
        let f = fixture();
        let body = mutate(&f.valid.body, &muts);
        prop_assume!(body != f.valid.body);
        // The body also goes through the prost decoder the writer uses.
        let _ = EventBody::decode(body.as_slice());
        append_hostile(SignedEvent { body, signatures: f.valid.signatures.clone() })?;
    }

    #[test]
    fn mutated_signed_events_decode_or_fail_cleanly_and_never_forge(
        muts in proptest::collection::vec(mutation(), 1..4)
    ) {
        let f = fixture();
        let bytes = mutate(&f.valid.encode_to_vec(), &muts);
        if let Ok(ev) = SignedEvent::decode(bytes.as_slice()) {
            append_hostile(ev)?;
        }
    }

    #[test]
    fn random_bytes_never_panic_the_proto_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = SignedEvent::decode(bytes.as_slice());
        let _ = LogEntry::decode(bytes.as_slice());
        let _ = EventBody::decode(bytes.as_slice());
        let _ = celltrail::pb::Receipt::decode(bytes.as_slice());
    }

    #[test]
    fn mutated_signed_checkpoints_never_open_with_other_text(
        muts in proptest::collection::vec(mutation(), 1..4),
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
    ) {
        let log = NoteSigner::generate("log.example/x").unwrap();
        let cp = Checkpoint { origin: log.name.clone(), size, root, extensions: vec![] };
        let note = sign_note(&cp.to_text(), &[&log]).unwrap();
        let bad = mutate(note.as_bytes(), &muts);
        if let Ok(opened) = celltrail::note::open_note_bytes(&bad, &[log.verifier()]) {
            prop_assert_eq!(opened.text, cp.to_text(), "a mutated note opened with different text");
        }
        if let Ok(text) = std::str::from_utf8(&bad) {
            let _ = Checkpoint::parse(text);
            let _ = open_note(text, &[]);
        }
    }

    #[test]
    fn trust_anchor_files_never_panic(
        text in prop_oneof![
            any::<String>(),
            "(#[^\n]{0,20}\n|[a-z.]{0,10}\\+[0-9a-f]{0,8}\\+[A-Za-z0-9+/=]{0,50}\n| *\n){0,5}",
        ]
    ) {
        let _ = celltrail::keys::parse_trust_anchors(&text, std::path::Path::new("anchors.txt"));
    }

    #[test]
    fn policy_toml_never_panics(
        text in any::<String>(),
        muts in proptest::collection::vec(mutation(), 0..4),
        drop_line in any::<usize>(),
    ) {
        let _ = celltrail::policy::Policy::from_toml(&text);
        let default = include_str!("../src/policy/default.toml");
        let mut lines: Vec<&str> = default.lines().collect();
        lines.remove(drop_line % lines.len());
        let _ = celltrail::policy::Policy::from_toml(&lines.join("\n"));
        let mutated = mutate(default.as_bytes(), &muts);
        if let Ok(t) = std::str::from_utf8(&mutated) {
            let _ = celltrail::policy::Policy::from_toml(t);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// gRPC and the socket.

async fn still_serves(server: &TestServer) {
    let mut c = server.client().await;
    let err = c
        .get_head(GetHeadRequest {
            chain_id: "NO-SUCH".into(),
        })
        .await
        .expect_err("no such chain");
    assert_eq!(
        err.code(),
        Code::NotFound,
        "server answers normally: {}",
        err.message()
    );
}

#[tokio::test]
async fn one_mebibyte_message_is_refused_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await.max_encoding_message_size(8 << 20);
    let big = SignedEvent {
        body: vec![0x42; 1 << 20],
        signatures: vec![],
    };
    let err = c.append(big).await.expect_err("1 MiB must be refused");
    // RESOURCE_EXHAUSTED as ledger.proto says (tonic's own answer is OUT_OF_RANGE).
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("the message is 1048")
            && err.message().contains("at most 262144 bytes (256 KiB)"),
        "{}",
        err.message()
    );
    // Under the gRPC limit but over the 64 KiB entry limit: the ledger refuses it itself.
    let mid = SignedEvent {
        body: vec![0x42; 200 * 1024],
        signatures: vec![],
    };
    let err = c
        .append(mid)
        .await
        .expect_err("200 KiB body must be refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("64 KiB"), "{}", err.message());
    still_serves(&server).await;
    server.stop().await;
}

/// Writes `bytes` on a fresh TCP connection, reads whatever comes back for a moment, closes.
async fn poke(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_millis(50), s.read(&mut buf)).await;
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn garbage_and_malformed_http2_frames_never_crash_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    // A connection that sends the preface and then nothing stays open throughout.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(PREFACE).await.unwrap();

    let with_preface = |frames: &[Vec<u8>]| {
        let mut b = PREFACE.to_vec();
        for f in frames {
            b.extend_from_slice(f);
        }
        b
    };
    let settings = frame(4, 0, 0, &[]);
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello start
        vec![0u8; 5000],
        PREFACE[..10].to_vec(),
        // SETTINGS whose length is not a multiple of 6.
        with_preface(&[frame(4, 0, 0, &[1, 2, 3, 4, 5])]),
        // A DATA frame header claiming 16 MiB, then EOF.
        with_preface(&[settings.clone(), vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]]),
        // HEADERS with a garbage HPACK block.
        with_preface(&[
            settings.clone(),
            frame(1, 0x5, 1, &[0xff, 0xff, 0xff, 0xff, 0x7f]),
        ]),
        // WINDOW_UPDATE of 0 on the connection; PING of the wrong length; unknown frame type.
        with_preface(&[settings.clone(), frame(8, 0, 0, &[0, 0, 0, 0])]),
        with_preface(&[settings.clone(), frame(6, 0, 0, &[1, 2, 3])]),
        with_preface(&[settings.clone(), frame(0xee, 0xff, 7, &[9; 40])]),
        // DATA on a stream that was never opened; RST_STREAM on stream 0.
        with_preface(&[settings.clone(), frame(0, 1, 3, b"hello")]),
        with_preface(&[settings.clone(), frame(3, 0, 0, &[0, 0, 0, 1])]),
        // A gRPC request whose message prefix claims 4 GiB.
        with_preface(&[
            settings.clone(),
            frame(1, 0x4, 1, b"\x83\x86\x44\x1a/celltrail.v1.Ledger/Append"),
            frame(0, 1, 1, &[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
        ]),
    ];
    for case in &cases {
        poke(addr, case).await;
    }
    // Random bytes, with and without the HTTP/2 preface.
    use rand::{Rng, RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xce11);
    for i in 0..200 {
        let mut b = vec![0u8; rng.gen_range(1..3000)];
        rng.fill_bytes(&mut b);
        if i % 2 == 0 {
            b.splice(0..0, PREFACE.iter().copied());
        }
        poke(addr, &b).await;
    }
    still_serves(&server).await;
    // Many connections at once that never complete a request.
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&PREFACE[..7]).await;
        held.push(s);
    }
    still_serves(&server).await;
    drop(held);
    drop(idle);
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn deadline_from_the_client_is_honoured() {
    // A 1 ns deadline cannot be met: the server (or client) must answer DEADLINE_EXCEEDED and
    // stay up, rather than run the request unbounded.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut c = server.client().await;
    let mut req = tonic::Request::new(GetHeadRequest {
        chain_id: "X".into(),
    });
    req.set_timeout(std::time::Duration::from_nanos(1));
    match c.get_head(req).await {
        Err(s) if s.code() == Code::DeadlineExceeded || s.code() == Code::Cancelled => {}
        Err(s) if s.code() == Code::NotFound => {} // answered before the deadline fired
        other => panic!("unexpected {other:?}"),
    }
    still_serves(&server).await;
    server.stop().await;
}
